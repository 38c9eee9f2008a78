"""Shared model downloader: fetch a model URI into a local model directory."""
