"""The simulator: a day of power and load through the placement code, policies side by side."""
