FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md worker.py ./
COPY remedium remedium
COPY workflows workflows
COPY activities activities
COPY runbooks runbooks
RUN pip install --no-cache-dir .
ENV REMEDIUM_RUNBOOKS_DIR=/app/runbooks
CMD ["remedium", "worker"]
