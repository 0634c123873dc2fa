"""LoRaWAN over MQTT: The Things Stack v3 uplinks and ChirpStack v4 uplink events (JSON and protobuf) into the twin's
readings (``plietsch source lorawan``). ``formats`` parses, ``decoders`` decodes payloads per device profile,
``registry`` maps DevEUIs to sensors, ``convert`` counts each uplink once, ``source`` runs it, ``mosquitto`` starts a
local MQTT broker."""
