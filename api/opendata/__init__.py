"""The open data hub (issue 13 item 7): every layer of the twin as GeoJSON and CSV downloads with licence and
provenance, and a DCAT-AP.de catalogue (JSON-LD, Turtle) that describes them. Roles apply: the public catalogue lists
only public datasets (api/opendata/datasets.py says which and why)."""
