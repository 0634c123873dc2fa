"""OGC SensorThings API 1.1 read side: the model per role, OData query options, observations from history."""
