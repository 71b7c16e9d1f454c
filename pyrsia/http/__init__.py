"""A small threaded HTTP/1.1 server on h11, and the request/response values it carries."""
