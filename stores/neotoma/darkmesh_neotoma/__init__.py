"""darkmesh-neotoma: Neotoma as a live contact store, a sync source and the home of
signed ``warm_intro_reveal`` records."""

__version__ = "0.1.0"
