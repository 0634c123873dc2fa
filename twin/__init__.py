"""The pure domain of Plietsch Twin: ids, entities, events and the fold ``apply(state, event)``.

Nothing here talks to a broker, a web framework or the file system beyond reading region packs.
"""
