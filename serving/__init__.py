"""The live model server: FastAPI app serving the MLflow champion, with a compiled small-batch scorer."""
