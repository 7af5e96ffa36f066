"""One ``APIRouter`` per resource of the registry API (see docs/api.md)."""
