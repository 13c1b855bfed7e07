"""The one exception type of the geometry layer."""


class GeometryError(ValueError):
    """Invalid geometry input: the message names the element, its value and what is allowed."""
