"""Road traffic on the twin's network: a directed road graph (from a region pack, OpenStreetMap tags or TNTP files),
demand between zones, static user-equilibrium assignment with BPR link costs, and what-if scenarios. Pure: no Kafka,
Faust or FastAPI imports."""
