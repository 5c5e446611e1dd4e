# pgdurable in front of a PostgreSQL server (see docker-compose.yml).
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY pgdurable_proxy ./pgdurable_proxy
COPY dsl ./dsl
COPY engine ./engine
RUN pip install --no-cache-dir . && useradd --system --no-create-home pgdurable

USER pgdurable
EXPOSE 6432 8080
ENV PGDURABLE_HOST=0.0.0.0 \
    PGDURABLE_PORT=6432 \
    PGDURABLE_HTTP_PORT=8080 \
    PGDURABLE_HTTP_HOST=0.0.0.0 \
    PGDURABLE_LOG_LEVEL=info
HEALTHCHECK --interval=5s --timeout=3s --retries=10 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"
ENTRYPOINT ["pgdurable"]
