"""Training, apart from inference: nothing outside this package imports it (see config.py, train.py, recipe.py)."""
