"""Darkmesh writer-tier skill: a writer's tier in a topic, from local observations."""

__version__ = "0.1.0"
