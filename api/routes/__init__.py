"""Route modules, one APIRouter each; `api.app.create_app` includes them."""
