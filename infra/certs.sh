#!/usr/bin/env bash
# Makes the certificates the compose deployment needs, into infra/certs/ (ignored by git; keep the CA key offline):
#   ca.crt / ca.key          a private CA for the services (Kafka clients trust it)
#   kafka.pem                the broker's key and certificate (names: kafka, localhost)
# The public HTTPS certificate is Caddy's business: with PLIETSCH_DOMAIN set to a public name it gets one from
# Let's Encrypt (TLS-ALPN on port 443); for a test setup use PLIETSCH_TLS=internal (Caddy's own CA).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p certs && chmod 700 certs && cd certs
[ -f ca.key ] || openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj "/CN=Plietsch services CA" \
  -keyout ca.key -out ca.crt
openssl req -newkey rsa:3072 -nodes -subj "/CN=kafka" -keyout kafka.key -out kafka.csr
openssl x509 -req -in kafka.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 397 -out kafka.crt \
  -extfile <(printf "subjectAltName=DNS:kafka,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth")
cat kafka.key kafka.crt > kafka.pem
chmod 600 ./*.key kafka.pem
rm -f kafka.csr
echo "certificates in $(pwd); mount read-only, never commit them"
