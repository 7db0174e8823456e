# eventpipe application image: collector, consumer, Dagster webserver/daemon (and code), dbt, Spark client.

# The web UI (web/), built once and copied in; the query service serves web/dist at /.
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless make curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY . .
RUN pip install --no-cache-dir -e .
COPY --from=web /web/dist /app/web/dist

ENV EVENTPIPE_HOME=/var/lib/eventpipe \
    DAGSTER_HOME=/opt/dagster/home
RUN mkdir -p /var/lib/eventpipe /opt/dagster/home && cp deploy/dagster.yaml /opt/dagster/home/dagster.yaml

EXPOSE 8080 3000
CMD ["eventpipe", "--help"]
