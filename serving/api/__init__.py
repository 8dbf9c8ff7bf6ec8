"""The online service's parts: request and response schemas, request handling shared by the endpoints, the
ASGI guard and OpenAPI document, and the BentoML model store the service reads."""
