#!/bin/bash
# GitHub Action step 2: run imgbuild's container on the OS image and write the step outputs.
#
# Environment (set by action.yml from the inputs): IMAGE, TYPES, BLUEPRINT, ARCH, ROOTFS, OUTPUT_DIR,
# BUILDER_IMAGE, ADDITIONAL_ARGS, CHOWN, AWS_AMI_NAME, AWS_REGION, AWS_BUCKET, ACTION_PATH, GITHUB_OUTPUT,
# RUNNER_TEMP; IMGBUILD_PODMAN overrides the podman command line (e.g. to add --runtime). AWS credentials
# are passed to the container by name only (-e NAME), never written anywhere.
set -euo pipefail
die() {
    echo "::error::imgbuild: $*" >&2
    exit 2
}
[[ -n ${IMAGE:-} ]] || die "the input 'image' is required"
read -r -a podman <<<"${IMGBUILD_PODMAN:-podman}"
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
[[ $(id -u) -eq 0 ]] || podman=(sudo --preserve-env=CONTAINERS_CONF,AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY,AWS_SESSION_TOKEN,AWS_PROFILE,AWS_DEFAULT_REGION "${podman[@]}")
builder=${BUILDER_IMAGE:-localhost/imgbuild:latest}
out=${OUTPUT_DIR:-output}
mkdir -p "$out"
out=$(cd "$out" && pwd)
tmp=${RUNNER_TEMP:-/tmp}

# The builder image: present already, or built from this action's checkout (localhost/...), or pulled.
if ! "${podman[@]}" image exists "$builder"; then
    if [[ $builder == localhost/* ]]; then
        "${sudo[@]}" make -C "$ACTION_PATH" container
    else
        "${podman[@]}" pull "$builder"
    fi
fi

run=("${podman[@]}" run --rm --privileged
    -v "$out:/output"
    -v /var/lib/containers/storage:/var/lib/containers/storage)
args=()
# The blueprint: a file, or inline text (anything with a newline, or that is no file).
if [[ -n ${BLUEPRINT:-} ]]; then
    if [[ $BLUEPRINT != *$'\n'* && -f $BLUEPRINT ]]; then
        blueprint=$(cd "$(dirname "$BLUEPRINT")" && pwd)/$(basename "$BLUEPRINT")
    elif [[ $BLUEPRINT == *$'\n'* || $BLUEPRINT == *=* ]]; then
        blueprint=$(mktemp "$tmp/imgbuild-blueprint.XXXXXX")
        printf '%s\n' "$BLUEPRINT" >"$blueprint"
    else
        die "the blueprint file $BLUEPRINT does not exist (give a path or the blueprint's TOML text)"
    fi
    case $blueprint in *.json | *.yaml | *.yml) ext=${blueprint##*.} ;; *) ext=toml ;; esac
    run+=(-v "$blueprint:/run/imgbuild-blueprint.$ext:ro")
    args+=(--blueprint "/run/imgbuild-blueprint.$ext")
fi
[[ -z ${ARCH:-} ]] || args+=(--arch "$ARCH")
[[ -z ${ROOTFS:-} ]] || args+=(--rootfs "$ROOTFS")
for name in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE AWS_DEFAULT_REGION; do
    [[ -z ${!name:-} ]] || run+=(-e "$name")
done
read -r -a extra <<<"${ADDITIONAL_ARGS:-}"
read -r -a types <<<"$(tr ',\n' '  ' <<<"${TYPES:-qcow2}")"
((${#types[@]})) || die "the input 'types' names no output type"

# `imgbuild build --type T --type T REF` builds every type in one run and one result.json. An imgbuild
# without it (before 0.2) builds one type per run: `imgbuild T REF`, each into its own directory.
if "${run[@]}" "$builder" build --help 2>/dev/null | grep -q -- '--type'; then
    type_args=()
    for t in "${types[@]}"; do type_args+=(--type "$t"); done
    "${run[@]}" "$builder" build "${type_args[@]}" "${args[@]}" "${extra[@]}" --output /output "$IMAGE"
else
    for t in "${types[@]}"; do
        "${run[@]}" "$builder" "$t" "${args[@]}" "${extra[@]}" --output "/output/$t" "$IMAGE"
    done
fi
# The AMI: the disk built for type ami is uploaded and registered (`imgbuild upload aws`).
if [[ -n ${AWS_AMI_NAME:-} ]]; then
    disk=$(python3 "$ACTION_PATH/ci/action/outputs.py" --find ami "$out")
    [[ -n $disk ]] || die "aws-ami-name is set but no disk of type ami was built (add ami to 'types')"
    aws=(--aws-ami-name "$AWS_AMI_NAME" --aws-region "${AWS_REGION:?aws-region is required for an AMI}")
    [[ -z ${AWS_BUCKET:-} ]] || aws+=(--aws-bucket "$AWS_BUCKET")
    "${run[@]}" "$builder" upload aws "${aws[@]}" --progress json "/output/$disk" | tee "$out/ami.jsonl"
fi
[[ -z ${CHOWN:-} ]] || "${sudo[@]}" chown -R "$CHOWN" "$out"
python3 "$ACTION_PATH/ci/action/outputs.py" "$out" "${types[@]}" >>"${GITHUB_OUTPUT:-/dev/stdout}"
