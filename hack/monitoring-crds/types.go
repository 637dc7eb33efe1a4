// Package monitoringcrds only pins the API types controller-gen reads.
package monitoringcrds

import _ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
