"""Build the `kubernetes` ApiClient the worker hands to actions, the way kubectl finds a cluster."""

from __future__ import annotations

import logging

import kubernetes.client
import kubernetes.config
from kubernetes.config.config_exception import ConfigException

from remedium.settings import Settings

log = logging.getLogger("remedium.kubernetes")


def kubernetes_api_client(settings: Settings) -> kubernetes.client.ApiClient | None:
    """Kubeconfig (file + context) when set, else in-cluster service account, else None.

    A kubeconfig that is named but unusable is an error (the operator asked for it);
    an absent in-cluster environment just means Kubernetes is not configured.
    """
    if settings.kubeconfig is not None or settings.kube_context is not None:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(settings.kubeconfig) if settings.kubeconfig is not None else None,
            context=settings.kube_context,
            client_configuration=configuration,
            persist_config=False,
        )
        log.info("kubernetes: kubeconfig %s, API server %s", settings.kubeconfig, configuration.host)
        return kubernetes.client.ApiClient(configuration)
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except ConfigException:
        return None
    log.info("kubernetes: in-cluster service account, API server %s", configuration.host)
    return kubernetes.client.ApiClient(configuration)
