// Command daprd is daprd 1.18.2 with three components, built for Ottava's
// side-by-side benchmarks (bench/peers, docs/benchmarks.md):
//
//   - state "in-memory" and pubsub "in-memory", the stores the benchmarks use;
//   - name resolution "sqlite": each daprd writes its address to a shared SQLite
//     file and finds its peers there, so invocation stays on loopback (daprd's
//     standalone default, mDNS, multicasts on the network).
//
// The runtime is github.com/dapr/dapr's, unchanged; this file only chooses the
// components and starts it. Upstream's cmd/daprd/app cannot be imported for that:
// its component list panics unless every stable component is compiled in.
package main

import (
	"context"
	"fmt"
	"os"

	"go.opencensus.io/stats/view"

	nrsqlite "github.com/dapr/components-contrib/nameresolution/sqlite"
	pubsubinmemory "github.com/dapr/components-contrib/pubsub/in-memory"
	stateinmemory "github.com/dapr/components-contrib/state/in-memory"

	"github.com/dapr/dapr/cmd/daprd/options"
	"github.com/dapr/dapr/pkg/buildinfo"
	nrLoader "github.com/dapr/dapr/pkg/components/nameresolution"
	pubsubLoader "github.com/dapr/dapr/pkg/components/pubsub"
	stateLoader "github.com/dapr/dapr/pkg/components/state"
	"github.com/dapr/dapr/pkg/healthz"
	"github.com/dapr/dapr/pkg/metrics"
	"github.com/dapr/dapr/pkg/modes"
	"github.com/dapr/dapr/pkg/runtime"
	"github.com/dapr/dapr/pkg/runtime/registry"
	"github.com/dapr/dapr/pkg/security"
	"github.com/dapr/kit/concurrency"
	"github.com/dapr/kit/logger"
	"github.com/dapr/kit/signals"
)

var (
	log        = logger.NewLogger("dapr.runtime")
	logContrib = logger.NewLogger("dapr.contrib")
)

func main() {
	opts, err := options.New(os.Args[1:])
	if err != nil {
		log.Fatalf("flags: %v", err)
	}
	if opts.RuntimeVersion || opts.BuildInfo {
		fmt.Printf("Version: %s\nGit Commit: %s\n", buildinfo.Version(), buildinfo.Commit())
		return
	}
	opts.Logger.SetAppID(opts.AppID)
	if err := logger.ApplyOptionsToLoggers(&opts.Logger); err != nil {
		log.Fatal(err)
	}

	// Components log through their registry's logger, which must be set before they start.
	stateLoader.DefaultRegistry.Logger = logContrib
	pubsubLoader.DefaultRegistry.Logger = logContrib
	nrLoader.DefaultRegistry.Logger = logContrib
	stateLoader.DefaultRegistry.RegisterComponent(stateinmemory.NewInMemoryStateStore, "in-memory")
	pubsubLoader.DefaultRegistry.RegisterComponent(pubsubinmemory.New, "in-memory")
	nrLoader.DefaultRegistry.RegisterComponent(nrsqlite.NewResolver, "sqlite")

	log.Infof("daprd %s (commit %s) with state.in-memory, pubsub.in-memory, nameresolution.sqlite",
		buildinfo.Version(), buildinfo.Commit())
	if err := run(signals.Context(), opts); err != nil {
		log.Fatalf("runtime: %v", err)
	}
}

// run starts the security provider (no Sentry: --enable-mtls=false in the benchmarks)
// and the runtime beside it, until ctx ends (SIGTERM, SIGINT) or the runtime stops.
func run(ctx context.Context, opts *options.Options) error {
	components := registry.NewOptions().
		WithStateStores(stateLoader.DefaultRegistry).
		WithPubSubs(pubsubLoader.DefaultRegistry).
		WithNameResolutions(nrLoader.DefaultRegistry)

	health := healthz.New()
	provider, err := security.New(ctx, security.Options{
		SentryAddress:           opts.SentryAddress,
		ControlPlaneTrustDomain: opts.ControlPlaneTrustDomain,
		ControlPlaneNamespace:   opts.ControlPlaneNamespace,
		TrustAnchors:            opts.TrustAnchors,
		AppID:                   opts.AppID,
		MTLSEnabled:             opts.EnableMTLS,
		Mode:                    modes.DaprMode(opts.Mode),
		Healthz:                 health,
		JwtAudiences:            opts.SentryRequestJwtAudiences,
	})
	if err != nil {
		return err
	}

	startRuntime := func(ctx context.Context) error {
		handler, err := provider.Handler(ctx)
		if err != nil {
			return err
		}
		config := &runtime.Config{
			AppID:                         opts.AppID,
			Mode:                          opts.Mode,
			Config:                        opts.Config,
			ResourcesPath:                 opts.ResourcesPath,
			ComponentsPath:                opts.ComponentsPath,
			AppProtocol:                   opts.AppProtocol,
			ApplicationPort:               opts.AppPort,
			AppChannelAddress:             opts.AppChannelAddress,
			AppSSL:                        opts.AppSSL,
			AppMaxConcurrency:             opts.AppMaxConcurrency,
			AllowedOrigins:                opts.AllowedOrigins,
			DaprHTTPPort:                  opts.DaprHTTPPort,
			DaprAPIGRPCPort:               opts.DaprAPIGRPCPort,
			DaprAPIListenAddresses:        opts.DaprAPIListenAddresses,
			DaprInternalGRPCPort:          opts.DaprInternalGRPCPort,
			DaprInternalGRPCListenAddress: opts.DaprInternalGRPCListenAddress,
			DaprPublicPort:                opts.DaprPublicPort,
			DaprPublicListenAddress:       opts.DaprPublicListenAddress,
			ProfilePort:                   opts.ProfilePort,
			EnableProfiling:               opts.EnableProfiling,
			EnableMTLS:                    opts.EnableMTLS,
			SentryAddress:                 opts.SentryAddress,
			ControlPlaneAddress:           opts.ControlPlaneAddress,
			ActorsService:                 opts.ActorsService,
			RemindersService:              opts.RemindersService,
			SchedulerAddress:              opts.SchedulerAddress,
			SchedulerStreams:              opts.SchedulerJobStreams,
			ActorsDisseminationTimeout:    opts.ActorsDisseminationTimeout,
			HotReloadReconcileInterval:    opts.HotReloadReconcileInterval,
			MaxRequestSize:                opts.MaxRequestSize,
			ReadBufferSize:                opts.ReadBufferSize,
			UnixDomainSocket:              opts.UnixDomainSocket,
			DaprGracefulShutdownSeconds:   opts.DaprGracefulShutdownSeconds,
			DaprBlockShutdownDuration:     opts.DaprBlockShutdownDuration,
			DisableBuiltinK8sSecretStore:  opts.DisableBuiltinK8sSecretStore,
			EnableAppHealthCheck:          opts.EnableAppHealthCheck,
			AppHealthCheckPath:            opts.AppHealthCheckPath,
			AppHealthProbeInterval:        opts.AppHealthProbeInterval,
			AppHealthProbeTimeout:         opts.AppHealthProbeTimeout,
			AppHealthThreshold:            opts.AppHealthThreshold,
			EnableAPILogging:              opts.EnableAPILogging,
			DisableInitEndpoints:          opts.DisableInitEndpoints,
			Metrics: metrics.Options{
				Enabled:       opts.Metrics.Enabled(),
				Log:           log,
				Port:          opts.Metrics.Port(),
				Namespace:     metrics.DefaultMetricNamespace,
				Healthz:       health,
				ListenAddress: opts.Metrics.ListenAddress(),
				Meter:         view.NewMeter(),
			},
			Registry: components,
			Security: handler,
			Healthz:  health,
		}
		rt, err := runtime.FromConfig(ctx, config)
		if err != nil {
			return err
		}
		return rt.Run(ctx)
	}
	return concurrency.NewRunnerManager(provider.Run, startRuntime).Run(ctx)
}
