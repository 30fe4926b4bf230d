#!/usr/bin/env bash
# archgate's merge step for CI pipelines (docs/ci.md): the GitHub Action
# (action.yml), the Tekton Task (deploy/tekton/archgate-merge.yaml) and the
# GitLab example (examples/gitlab-ci.yml) all run this. It gates and merges
# the per-platform images a pipeline pushed into one index per tag, with
# archgate's `registry` source, and writes the report and a job summary.
#
# Settings (environment):
#   ARCHGATE               archgate binary (default: archgate on PATH)
#   ARCHGATE_CONFIG        an archgate.toml to use as it is; else one is made
#                          from the settings below
#   ARCHGATE_DIGESTS       directory of digest files (one per pushed image)
#   ARCHGATE_SOURCE        HOST/PATH the per-platform images were pushed to
#   ARCHGATE_TEMPLATE      instead of a digests dir: each arch's reference
#   ARCHGATE_REFERENCES    or the references themselves: "x86_64=REF aarch64=REF"
#   ARCHGATE_IMAGE         where the index goes: HOST/PATH (several: spaces)
#   ARCHGATE_TAGS          its tags (spaces or commas; {release} = version)
#   ARCHGATE_ARCHES        the arches that should be there (spaces or commas)
#   ARCHGATE_POLICY        refuse (default), hybrid or lose
#   ARCHGATE_VERSION       {version} and {release}
#   ARCHGATE_BUILD_ID      the build's id: a tag never goes back to an older build
#   ARCHGATE_TLS_VERIFY    false for a plain-HTTP or self-signed registry
#   ARCHGATE_FAIL_ON_REFUSED  true (default): a refusal fails the step
#   ARCHGATE_OUT           where report.json and summary.md go (default: .)
# Outputs: report.json, summary.md and decision in ARCHGATE_OUT; where the pipeline
# offers them, $GITHUB_STEP_SUMMARY gets the summary and $GITHUB_OUTPUT
# `report`, `decision` (published, unchanged, refused or error: the worst).
set -euo pipefail

archgate=${ARCHGATE:-archgate}
out=${ARCHGATE_OUT:-.}
mkdir -p "$out"
words() { printf '%s' "$1" | tr ',' ' '; }
quoted() { # words as a TOML array
  local first=1 w
  printf '['
  for w in $(words "$1"); do
    [ $first = 1 ] || printf ', '
    printf '"%s"' "$w"
    first=0
  done
  printf ']'
}

config=${ARCHGATE_CONFIG:-}
if [ -z "$config" ]; then
  : "${ARCHGATE_IMAGE:?set ARCHGATE_IMAGE, where the index goes (HOST/PATH)}"
  : "${ARCHGATE_TAGS:?set ARCHGATE_TAGS, the tags to publish}"
  : "${ARCHGATE_ARCHES:?set ARCHGATE_ARCHES, the arches that should be there}"
  config="$out/archgate-merge.toml"
  {
    echo '[source]'
    echo 'kind = "registry"'
    if [ -n "${ARCHGATE_TEMPLATE:-}" ]; then
      printf 'template = "%s"\n' "$ARCHGATE_TEMPLATE"
    elif [ -n "${ARCHGATE_REFERENCES:-}" ]; then
      printf 'references = {'
      sep=" "
      for pair in $(words "$ARCHGATE_REFERENCES"); do
        printf '%s%s = "%s"' "$sep" "${pair%%=*}" "${pair#*=}"
        sep=", "
      done
      printf ' }\n'
    else
      : "${ARCHGATE_DIGESTS:?set ARCHGATE_DIGESTS (a digests directory) or ARCHGATE_TEMPLATE}"
      : "${ARCHGATE_SOURCE:?set ARCHGATE_SOURCE, where the digests were pushed (HOST/PATH)}"
      printf 'location = "%s"\n' "$(cd "$ARCHGATE_DIGESTS" && pwd)"
      printf 'repository = "%s"\n' "$ARCHGATE_SOURCE"
    fi
    printf 'arches = %s\n' "$(quoted "$ARCHGATE_ARCHES")"
    [ -z "${ARCHGATE_VERSION:-}" ] || printf 'version = "%s"\n' "$ARCHGATE_VERSION"
    printf '\n[gate]\npolicy = "%s"\n' "${ARCHGATE_POLICY:-refuse}"
    if [ "${ARCHGATE_TLS_VERIFY:-true}" = false ]; then
      hosts=""
      refs=""
      for pair in $(words "${ARCHGATE_REFERENCES:-}"); do refs="$refs ${pair#*=}"; done
      for r in $ARCHGATE_IMAGE ${ARCHGATE_SOURCE:-} ${ARCHGATE_TEMPLATE:-} $refs; do
        h=${r#docker://}; h=${h%%/*}
        case " $hosts " in *" $h "*) ;; *) hosts="$hosts $h" ;; esac
      done
      for h in $hosts; do printf '\n[registry."%s"]\ntls-verify = false\n' "$h"; done
    fi
    repos=""
    for r in $ARCHGATE_IMAGE; do repos="$repos docker://${r#docker://}"; done
    printf '\n[[image]]\nname = "image"\nrepositories = %s\ntags = %s\n' \
      "$(quoted "$repos")" "$(quoted "$ARCHGATE_TAGS")"
  } > "$config"
fi

args=(publish -c "$config" --format markdown --report "$out/report.json")
[ -z "${ARCHGATE_BUILD_ID:-}" ] || args+=(--build-id "$ARCHGATE_BUILD_ID")
code=0
"$archgate" "${args[@]}" > "$out/summary.md" || code=$?

case $code in
  0) decision=$(grep -q '| published |' "$out/summary.md" && echo published || echo unchanged) ;;
  3) decision=refused ;;
  *) decision=error ;;
esac
echo "$decision" > "$out/decision"
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then cat "$out/summary.md" >> "$GITHUB_STEP_SUMMARY"; fi
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  { echo "report=$out/report.json"; echo "decision=$decision"; } >> "$GITHUB_OUTPUT"
fi
cat "$out/summary.md"
if [ $code = 3 ] && [ "${ARCHGATE_FAIL_ON_REFUSED:-true}" = false ]; then
  exit 0
fi
exit $code
