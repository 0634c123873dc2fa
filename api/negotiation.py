"""Content negotiation: the media ranges of an Accept header with their q values (RFC 9110)."""

from __future__ import annotations


def accepted(accept: str | None) -> list[tuple[str, float]]:
    """(media range in lower case, q) for each entry of *accept*, in the order given; a q that does not read is 0."""
    out = []
    for part in (accept or "").split(","):
        media, *params = [p.strip() for p in part.split(";")]
        if not media:
            continue
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        out.append((media.lower(), q))
    return out
