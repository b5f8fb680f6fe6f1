"""Using the winner: export with preprocessing inside, model card, prediction."""
