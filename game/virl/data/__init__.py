"""Bundled V-IRL data: OSM map features and generated routes (JSON, gzip) and the sign font."""
