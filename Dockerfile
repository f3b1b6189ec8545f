# The wire image: one Python package, any role chosen by the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY wire ./wire
COPY publisher ./publisher
COPY subscriber ./subscriber
RUN pip install --no-cache-dir ./subscriber '.'
ENV WIRE_HOST=0.0.0.0 WIRE_PORT=8080
EXPOSE 8080
USER nobody
CMD ["wire", "gateway"]
