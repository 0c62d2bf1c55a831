"""Darkmesh warm-intro skill: "who that I know can introduce me to role R at company C?"."""

__version__ = "0.1.0"
