"""pyinfra deploys of kvm-drivers: ``deploys.kvm.kvm_drivers`` for use from other projects."""
