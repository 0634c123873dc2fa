#!/usr/bin/env bash
# Kafka (KRaft, one node) with SASL/SCRAM-SHA-512 over TLS on every listener services use (issue 11 item 7).
# Secrets come from the environment (compose takes them from infra/.env, see .env.example); the broker's key and
# certificate are PEM files made by infra/certs.sh and mounted read-only at /certs.
set -euo pipefail
: "${KAFKA_BROKER_PASSWORD:?set KAFKA_BROKER_PASSWORD (inter-broker SCRAM user) in infra/.env}"
: "${KAFKA_CLIENT_PASSWORD:?set KAFKA_CLIENT_PASSWORD (the services SCRAM user) in infra/.env}"
: "${KAFKA_CLUSTER_ID:?set KAFKA_CLUSTER_ID (kafka-storage.sh random-uuid) in infra/.env}"
CONF=/tmp/server.properties
cat > "$CONF" <<PROPS
node.id=1
process.roles=broker,controller
controller.quorum.voters=1@localhost:9093
controller.listener.names=CONTROLLER
# CONTROLLER only on the loopback (this container's own controller); clients and the broker itself: SASL_SSL
listeners=SASL_SSL://:9094,CONTROLLER://127.0.0.1:9093
advertised.listeners=SASL_SSL://kafka:9094
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="${KAFKA_BROKER_PASSWORD}";
ssl.keystore.type=PEM
ssl.keystore.location=/certs/kafka.pem
ssl.truststore.type=PEM
ssl.truststore.location=/certs/ca.crt
ssl.endpoint.identification.algorithm=https
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:broker;User:plietsch
allow.everyone.if.no.acl.found=false
log.dirs=/var/lib/kafka/data
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
auto.create.topics.enable=false
PROPS
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  /opt/kafka/bin/kafka-storage.sh format --cluster-id "$KAFKA_CLUSTER_ID" --config "$CONF" \
    --add-scram "SCRAM-SHA-512=[name=broker,password=${KAFKA_BROKER_PASSWORD}]" \
    --add-scram "SCRAM-SHA-512=[name=plietsch,password=${KAFKA_CLIENT_PASSWORD}]"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$CONF"
