#!/bin/sh
# Drive `vmm serve` with curl, as Firecracker's getting-started recipes do.
#   curl_recipe.sh boot SOCK KERNEL DISK METRICS SNAPDIR   configure, boot, pause, (snapshot), resume
#   curl_recipe.sh load SOCK SNAPDIR                       load that snapshot in a fresh process
# Every answer's status is checked, and its body where it says something;
# the first mismatch ends the script with status 1 and a line saying why.
set -eu

phase=$1 sock=$2

# api METHOD PATH EXPECTED_STATUS [JSON]: prints the body; fails unless the status is EXPECTED_STATUS.
api() {
    method=$1 path=$2 want=$3
    if [ $# -ge 4 ]; then
        out=$(curl -sS --unix-socket "$sock" -X "$method" "http://localhost$path" \
            -H 'Accept: application/json' -H 'Content-Type: application/json' -d "$4" -w '\n%{http_code}')
    else
        out=$(curl -sS --unix-socket "$sock" -X "$method" "http://localhost$path" -H 'Accept: application/json' -w '\n%{http_code}')
    fi
    status=$(printf '%s\n' "$out" | tail -n 1)
    body=$(printf '%s\n' "$out" | sed '$d')
    if [ "$status" != "$want" ]; then
        echo "FAIL: $method $path: status $status, expected $want: $body" >&2
        exit 1
    fi
    printf '%s' "$body"
}

# expect TEXT WHAT: the last body must contain TEXT.
expect() {
    case "$body" in
        *"$1"*) ;;
        *) echo "FAIL: $2: expected $1 in: $body" >&2; exit 1 ;;
    esac
}

if [ "$phase" = boot ]; then
    kernel=$3 disk=$4 metrics=$5 snapdir=$6
    api GET / 200 >/dev/null; expect '"state": "Not started"' "GET / before boot"
    api PUT /machine-config 204 '{"vcpu_count": 1, "mem_size_mib": 64}'
    api GET /machine-config 200 >/dev/null; expect '"mem_size_mib": 64' "GET /machine-config"
    api PUT /boot-source 204 "{\"kernel_image_path\": \"$kernel\", \"boot_args\": \"console=ttyS0\"}"
    api PUT /drives/rootfs 204 "{\"drive_id\": \"rootfs\", \"path_on_host\": \"$disk\", \"is_root_device\": true, \"is_read_only\": true}"
    api PUT /metrics 204 "{\"metrics_path\": \"$metrics\"}"

    # Bad requests get Firecracker's status and error body.
    api PATCH /vm 400 '{"state": "Paused"}' >/dev/null; expect '{"fault_message": "The requested operation is not supported before starting the microVM."}' "PATCH /vm before boot"
    api PUT /machine-config 400 '{"vcpu_count": 1}' >/dev/null; expect 'missing field `mem_size_mib`' "incomplete machine-config"
    api PUT /actions 400 '{"action_type": "Reboot"}' >/dev/null; expect '"fault_message"' "unknown action"
    api PUT /drives/other 400 '{"drive_id": "rootfs", "path_on_host": "/x", "is_root_device": false}' >/dev/null; expect 'does not match' "drive id mismatch"
    api PUT /actions 400 '{"action_type": ' >/dev/null; expect 'deserializing the json body' "truncated JSON"
    api PUT /network-interfaces/eth0 400 '{"iface_id": "eth0"}' >/dev/null; expect 'Invalid request method and/or path: PUT network-interfaces.' "unsupported endpoint"
    api DELETE / 400 >/dev/null; expect 'Invalid request method and/or path: DELETE' "unsupported method"

    api PUT /actions 204 '{"action_type": "InstanceStart"}'
    api GET / 200 >/dev/null; expect '"state": "Running"' "GET / after InstanceStart"
    api PUT /boot-source 400 "{\"kernel_image_path\": \"$kernel\"}" >/dev/null; expect 'not supported after starting' "boot-source after boot"

    api PATCH /vm 204 '{"state": "Paused"}'
    api GET / 200 >/dev/null; expect '"state": "Paused"' "GET / after pause"
    api PUT /actions 204 '{"action_type": "FlushMetrics"}'
    sleep 0.3   # a paused guest makes no exits, however long it stays paused
    api PUT /actions 204 '{"action_type": "FlushMetrics"}'
    body=$(api PUT /snapshot/create 400 '{"snapshot_type": "Full", "snapshot_path": "x", "mem_file_path": "y", "bogus": 1}'); expect 'unknown field `bogus`' "snapshot with an unknown field"
    out=$(curl -sS --unix-socket "$sock" -X PUT http://localhost/snapshot/create -H 'Content-Type: application/json' \
        -d "{\"snapshot_type\": \"Full\", \"snapshot_path\": \"$snapdir/vm.state\", \"mem_file_path\": \"$snapdir/vm.mem\"}" -w '\n%{http_code}')
    case "$out" in
        *"snapshots are not available in this build"*"400") echo "SNAPSHOTS-UNAVAILABLE" ;;
        *"204") echo "SNAPSHOT-CREATED" ;;
        *) echo "FAIL: PUT /snapshot/create: $out" >&2; exit 1 ;;
    esac
    api PATCH /vm 204 '{"state": "Resumed"}'
    api GET / 200 >/dev/null; expect '"state": "Running"' "GET / after resume"
    echo "RECIPE-OK"
elif [ "$phase" = load ]; then
    snapdir=$3
    api GET / 200 >/dev/null; expect '"state": "Not started"' "GET / before load"
    api PUT /snapshot/load 400 "{\"snapshot_path\": \"$snapdir/vm.state\", \"mem_backend\": {\"backend_type\": \"Uffd\", \"backend_path\": \"/u\"}}" >/dev/null
    expect 'Uffd memory backend is not supported' "Uffd backend"
    api PUT /snapshot/load 204 "{\"snapshot_path\": \"$snapdir/vm.state\", \"mem_backend\": {\"backend_type\": \"File\", \"backend_path\": \"$snapdir/vm.mem\"}, \"resume_vm\": true}"
    api GET / 200 >/dev/null; expect '"state": "Running"' "GET / after load"
    api PUT /snapshot/load 400 "{\"snapshot_path\": \"$snapdir/vm.state\", \"mem_file_path\": \"$snapdir/vm.mem\"}" >/dev/null
    expect 'not allowed after configuring' "second load"
    echo "RECIPE-OK"
else
    echo "usage: $0 boot|load ..." >&2
    exit 2
fi
