"""What runs inside a trial: the torch/Keras seam (framework.py), the two training loops (torch_loop.py,
keras_loop.py), the Ray trainable (tune_trial.py), augmentation, devices, the LR finder and the models."""
