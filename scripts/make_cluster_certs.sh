#!/usr/bin/env bash
# A private certificate authority and certificates for a TLS Dask cluster (see the README,
# "Many slides on several machines"). Keep ca-key.pem offline; give each machine ca.pem and
# its own certificate and key.
#
#   scripts/make_cluster_certs.sh OUT_DIR [NAME...]     (names default to: scheduler worker client)
#
# Dask checks that every peer's certificate is signed by ca.pem (mutual TLS); it does not check
# host names, so one worker certificate may serve every worker machine.
set -euo pipefail
out=${1:?usage: make_cluster_certs.sh OUT_DIR [NAME...]}
shift
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(scheduler worker client)
mkdir -p "$out"
cd "$out"
umask 077
days=825
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days "$days" \
    -subj "/CN=EquiTriage cluster CA" -keyout ca-key.pem -out ca.pem 2>/dev/null
for name in "${names[@]}"; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=equitriage-$name" -keyout "$name-key.pem" -out "$name.csr" 2>/dev/null
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days "$days" \
        -out "$name.pem" 2>/dev/null
    rm "$name.csr"
done
rm -f ca.srl
echo "certificates in $out: ca.pem, ${names[*]/%/.pem} and their -key.pem files"
