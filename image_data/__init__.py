"""Image data: decode a folder or CIFAR-10 once (decode.py, one file at a time), cache and split it (cache.py)."""
