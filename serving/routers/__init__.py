"""The model server's routes, one APIRouter per concern (FastAPI's "Bigger Applications" layout): `info` (health,
readiness, versions, the served models), `scoring` (predictions), `chat` (prompts), `admin` (reloads, bearer token)
and `metrics` (Prometheus). Each reads the shared ServerState from the app (`common.server_state`)."""
