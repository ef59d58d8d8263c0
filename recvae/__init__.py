"""recvae: a collaborative-filtering recommender engine built around the Mult-VAE.

Data flows one way: ingest -> matrices -> split -> model -> scores -> top-N -> export.
"""

__version__ = "0.1.0"
