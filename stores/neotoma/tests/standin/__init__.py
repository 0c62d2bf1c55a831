"""A Neotoma 0.22.0 stand-in for Darkmesh's tests, written from ``spec/neotoma.md`` §7."""

from standin.app import BEARER_USER, LOCAL_USER, NeotomaStandin
from standin.server import StandinServer

__all__ = ["BEARER_USER", "LOCAL_USER", "NeotomaStandin", "StandinServer"]
