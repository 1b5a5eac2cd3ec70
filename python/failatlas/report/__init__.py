"""Figures and reports drawn from result dataclasses (never recomputed here)."""
