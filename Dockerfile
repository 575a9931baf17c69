FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /srv/bridge

COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
COPY samples ./samples
# Editable, so the migrations and samples are found beside the package.
RUN pip install --no-cache-dir -e .

RUN useradd --system --uid 10001 bridge && mkdir -p data && chown bridge data
USER bridge

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"
# Migrations run at start-up; `bridge worker` runs a worker-only process from the same image.
CMD ["bridge", "serve", "--host", "0.0.0.0", "--port", "8000"]
