import numpy as np


def cosine_mode(coords: np.ndarray, lower: float, length: float) -> np.ndarray:
    """prod_i cos(pi (x_i - lower) / L): the slowest zero-flux mode of V1."""
    return np.prod(np.cos(np.pi * (coords - lower) / length), axis=-1)


def slope(h, err) -> float:
    """Least-squares slope of log(err) against log(h)."""
    return float(np.polyfit(np.log(h), np.log(err), 1)[0])
