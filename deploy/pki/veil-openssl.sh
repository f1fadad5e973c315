#!/usr/bin/env bash
# Issue Veil mTLS certificates with plain OpenSSL (3.x) from a dedicated Veil CA.
#
#   veil-openssl.sh ca    DIR                 create DIR/ca.key (0600) and DIR/ca.pem
#   veil-openssl.sh issue DIR ROLE NAME [OUT] issue OUT/NAME.key (0600) + OUT/NAME.pem
#                                             from the CA in DIR (OUT defaults to DIR)
#   veil-openssl.sh sign DIR ROLE NAME CSR [OUT]
#                                             sign a CSR made on the node's own host
#                                             (its key never moves) into OUT/NAME.pem
#
# ROLE is a server role (provider, platform, gateway: EKU serverAuth + clientAuth, since
# the daemons also call each other with their own certificate) or a client role
# (institution, enterprise, auditor, admin: EKU clientAuth only).  NAME is a DNS label.
# Every certificate carries exactly one identity, the URI SAN veil://ROLE/NAME, and the
# DNS SAN NAME.ROLE.veil that clients pin (grpc.ssl_target_name_override), so the
# hosts' real DNS names never have to appear in the certificate.
#
# In production run "ca" once on an offline machine and prefer "sign": each node makes its
# key and CSR itself (deploy/README.md shows the two openssl commands), so node keys never
# leave their host.  Only the public key is taken from a CSR; subject, SANs, key usages
# and lifetime always come from here.
set -euo pipefail

CA_DAYS="${VEIL_CA_DAYS:-3650}"
LEAF_DAYS="${VEIL_LEAF_DAYS:-397}"
CA_SUBJECT="${VEIL_CA_SUBJECT:-/O=Veil/CN=Veil Root CA}"

die() { echo "veil-openssl: $*" >&2; exit 2; }

new_key() {  # new_key FILE: an ECDSA P-256 key, created with mode 0600
  (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1")
  chmod 0600 "$1"
}

cmd_ca() {
  local dir="$1"
  [[ -e "$dir/ca.key" ]] && die "$dir/ca.key exists; refusing to overwrite a CA"
  mkdir -p "$dir" && chmod 0700 "$dir"
  new_key "$dir/ca.key"
  cat >"$dir/ca.cnf" <<CNF
[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, digitalSignature, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF
  openssl req -new -x509 -config "$dir/ca.cnf" -key "$dir/ca.key" -subj "$CA_SUBJECT" \
    -sha256 -days "$CA_DAYS" -out "$dir/ca.pem"
  rm -f "$dir/ca.cnf"
  echo "CA: $dir/ca.pem (key $dir/ca.key)"
}

check_identity() {  # check_identity ROLE NAME: sets EKU for the role
  [[ "$2" =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] \
    || die "NAME $2 must be a DNS label (a-z, 0-9, '-'); unit social_insurance is node social-insurance"
  case "$1" in
    provider | platform | gateway) EKU="serverAuth, clientAuth" ;;
    institution | enterprise | auditor | admin) EKU="clientAuth" ;;
    *) die "unknown ROLE $1" ;;
  esac
}

cmd_sign() {  # sign a CSR; the CA, not the CSR, decides every extension
  local dir="$1" role="$2" name="$3" csr="$4" out="${5:-$1}" tmp
  [[ -f "$dir/ca.key" && -f "$dir/ca.pem" ]] || die "no CA in $dir (run: $0 ca $dir)"
  [[ -f "$csr" ]] || die "no CSR $csr"
  check_identity "$role" "$name"
  mkdir -p "$out"
  tmp="$(mktemp -d)"
  cat >"$tmp/ext.cnf" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyAgreement
extendedKeyUsage = $EKU
subjectAltName = DNS:$name.$role.veil, URI:veil://$role/$name
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EXT
  openssl x509 -req -in "$csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAserial "$dir/ca.srl" -CAcreateserial -sha256 -days "$LEAF_DAYS" \
    -subj "/O=Veil/OU=$role/CN=$name.$role.veil" -extfile "$tmp/ext.cnf" -out "$tmp/cert.pem" 2>/dev/null \
    || { rm -rf "$tmp"; die "signing failed"; }
  chmod 0644 "$tmp/cert.pem" && mv -f "$tmp/cert.pem" "$out/$name.pem"
  rm -rf "$tmp"
  echo "veil://$role/$name: cert $out/$name.pem"
}

cmd_issue() {  # a new key and certificate, made on the CA host
  local dir="$1" role="$2" name="$3" out="${4:-$1}" tmp
  check_identity "$role" "$name"
  mkdir -p "$out"
  tmp="$(mktemp -d)"
  new_key "$tmp/$name.key"
  openssl req -new -key "$tmp/$name.key" -subj "/O=Veil/OU=$role/CN=$name.$role.veil" -out "$tmp/$name.csr"
  # Key first, then the certificate, each by rename so readers never see half a file.
  mv -f "$tmp/$name.key" "$out/$name.key"
  cmd_sign "$dir" "$role" "$name" "$tmp/$name.csr" "$out" >/dev/null
  rm -rf "$tmp"
  echo "veil://$role/$name: cert $out/$name.pem  key $out/$name.key"
}

case "${1:-}" in
  ca) [[ $# -eq 2 ]] || die "usage: $0 ca DIR"; cmd_ca "$2" ;;
  issue) [[ $# -ge 4 && $# -le 5 ]] || die "usage: $0 issue DIR ROLE NAME [OUT]"; cmd_issue "${@:2}" ;;
  sign) [[ $# -ge 5 && $# -le 6 ]] || die "usage: $0 sign DIR ROLE NAME CSR [OUT]"; cmd_sign "${@:2}" ;;
  *) die "usage: $0 ca DIR | issue DIR ROLE NAME [OUT] | sign DIR ROLE NAME CSR [OUT]" ;;
esac
