# The worker (or, with another CMD, the ingress) for production. The demo's API sandboxes
# and scenarios (remedium/demo/) stay out of the image: see .dockerignore.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md worker.py ./
COPY remedium remedium
COPY workflows workflows
COPY activities activities
COPY runbooks runbooks
RUN test ! -e remedium/demo && pip install --no-cache-dir .
ENV REMEDIUM_RUNBOOKS_DIR=/app/runbooks
CMD ["remedium", "worker"]
