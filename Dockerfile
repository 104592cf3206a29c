# tsagg: the TimestreamAggregator OCS agent.
#
# The site config file (SCF) is mounted at /config, the data directory at
# /data; the agent instance is chosen with INSTANCE_ID (or --instance-id).
# The install step is `pip install .` (with socs, for the hand-off of closed
# files to suprsync), the one CI runs before the ocs-agent-cli integration
# tests.

FROM python:3.11-slim

ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    OCS_CONFIG_DIR=/config

# The ocs user and group of the OCS images, owning the data directory.
RUN groupadd -g 9000 ocs && \
    useradd -m -l -u 9000 -g 9000 ocs && \
    mkdir -p /config /data && \
    chown ocs:ocs /data

# An init process, so that SIGTERM reaches the agent and the current file is
# closed at a frame boundary before the container stops.
RUN pip install --no-cache-dir dumb-init

WORKDIR /app/tsagg/
COPY . /app/tsagg/
RUN pip install --no-cache-dir '.[suprsync]' && \
    python -c "from ocs.agent_cli import build_agent_list; assert 'TimestreamAggregator' in build_agent_list()"

# Away from the source tree, so that the installed package is imported.
WORKDIR /

VOLUME ["/data"]

ENTRYPOINT ["dumb-init", "ocs-agent-cli"]
