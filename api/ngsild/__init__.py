"""The twin as NGSI-LD (ETSI GS CIM 009, v1.6+ API): the mapping of twin entities to NGSI-LD entities after the Smart
Data Models (``entities``), the served @context (``context``), the query language and geo-queries (``query``), the
temporal representation from history (``temporal``), ProblemDetails errors (``problems``) and subscriptions
(``subscriptions``). The routes are ``api/routes/ngsild.py``."""
