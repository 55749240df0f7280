"""Tests of the demo / benchmark slide builders in scripts/."""
