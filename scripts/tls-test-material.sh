#!/usr/bin/env bash
# Makes TLS material for tests in DIR: a throw-away CA (ca.crt, ca.key) and a
# server certificate it signed for localhost and 127.0.0.1 (server.crt,
# server.key), valid for one day. Never for production. Also client
# certificates the CA signed (extendedKeyUsage clientAuth, for mTLS):
# client.crt and client.key (CN=weft-client), and client-NAME.crt and
# client-NAME.key (CN=NAME) for each further NAME given.
#   scripts/tls-test-material.sh DIR [NAME...]
set -euo pipefail
dir=${1:?usage: tls-test-material.sh DIR [CLIENT_NAME...]}
shift
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=weft-test-ca" \
    -keyout ca.key -out ca.crt \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
    -extfile server.ext -out server.crt 2>/dev/null
rm -f server.csr server.ext ca.srl

# Client certificates (mTLS), signed by the same CA.
client() { # CN FILE_STEM
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout "$2.key" -out "$2.csr" 2>/dev/null
    printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' "$1" > "$2.ext"
    openssl x509 -req -in "$2.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
        -extfile "$2.ext" -out "$2.crt" 2>/dev/null
    rm -f "$2.csr" "$2.ext" ca.srl
}
client weft-client client
for name in "$@"; do
    client "$name" "client-$name"
done
