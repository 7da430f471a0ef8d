# The dashboard with a local worker, SQLite under /data, and Fashion-MNIST available offline.
#
# By default it listens on 127.0.0.1 inside the container, which `-p` cannot reach from outside:
# nothing is exposed by accident. To use it from outside the container, give it an address and a
# password (beyond loopback it shows nothing without one):
#   docker run -e ABLATION_ADDRESS=0.0.0.0 -e ABLATION_PASSWORD=... -p 8501:8501 \
#              -v $PWD/ablation-data:/data cnn-ablation
# and keep the port on a network you trust, or put HTTPS in front of it.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# The dependencies first (their layer survives code changes), at constraints.txt's versions, with
# the PostgreSQL driver; then the package itself. No test tools: they are the `dev` extra.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['postgres']))" > /tmp/requirements.txt \
 && pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt
COPY . .
RUN pip install --no-cache-dir --no-deps . && rm -rf build *.egg-info
ENV ABLATION_HOME=/data PYTHONUNBUFFERED=1
# Not root: a user of its own owns /data (a named volume starts with this folder's owner) and
# nothing else it could write; the code under /app stays root's, read-only to it.
RUN useradd --create-home --uid 10001 ablation && mkdir -p /data && chown ablation /data
USER ablation
VOLUME /data
EXPOSE 8501
# Listens on ABLATION_ADDRESS (default 127.0.0.1); the command replaces itself with Streamlit
# (exec), which stays PID 1 so that `docker stop` reaches it.
CMD ["python", "-m", "cnn_ablation", "dashboard", "--port", "8501"]
