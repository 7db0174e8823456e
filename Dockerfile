# eventpipe application image: collector, consumer, Dagster webserver/daemon (and code), dbt, Spark client.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless make curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY . .
RUN pip install --no-cache-dir -e .

ENV EVENTPIPE_HOME=/var/lib/eventpipe \
    DAGSTER_HOME=/opt/dagster/home
RUN mkdir -p /var/lib/eventpipe /opt/dagster/home && cp deploy/dagster.yaml /opt/dagster/home/dagster.yaml

EXPOSE 8080 3000
CMD ["eventpipe", "--help"]
