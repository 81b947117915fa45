"""diffalign."""
