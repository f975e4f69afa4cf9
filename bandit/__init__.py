"""Adaptive allocation service: Thompson-sampling bandits on Redis, served over HTTP."""

__version__ = "0.1.0"
