"""Interaction data: ingest, vocabularies, datasets on disk and splits."""
