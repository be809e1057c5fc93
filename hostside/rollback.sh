# kvm-drivers: a step of run RUN failed: undo what RUN changed, then fail. Prepended with lib.sh and lock.sh.
# Usage: sh -c "$(cat lib.sh lock.sh rollback.sh)" kvm-rollback RUN
# Run after a boot-path fix that failed (operations/boot_path.py chains it after write.sh and
# aside.sh): every change RUN kept is undone (lock.sh kvm_rollback: only while each file holds
# what RUN wrote), under the host's lock. Always exits 1: the step it follows failed.
trap '' PIPE
run=$1
case "$run" in ''|*[!a-z0-9]*) echo "kvm-drivers: bad run id" >&2; exit 1 ;; esac
kvm_lock || { echo "kvm-drivers: $KVM_LOCK_ERR: run $run not rolled back" >&2; exit 1; }
kvm_rollback "$run"
echo "kvm-drivers: a step failed: what run $run changed is rolled back" >&2
exit 1
