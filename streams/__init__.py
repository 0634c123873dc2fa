"""Stream processing: Faust app, topic catalogue, agents, sources, archive sink."""
