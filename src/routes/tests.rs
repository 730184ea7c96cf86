//! The route table decides from port, method and path alone; no path may panic it.

use proptest::prelude::*;

use super::{route, ApiCall, Pages, Port, Route};

fn admin_route<'a>(method: &str, path: &'a str, pages: Pages) -> Route<'a> {
    route(Port::Admin, method, path, pages)
}

const ALL: Pages = Pages {
    dashboard: true,
    bull: true,
    on_client_port: false,
};

#[test]
fn api_paths_route_to_their_calls() {
    let api = |p| admin_route("GET", p, ALL);
    assert_eq!(api("/metrics"), Route::Metrics);
    assert_eq!(
        api("/dashboard/api/workers"),
        Route::Api("dashboard_api", ApiCall::Workers)
    );
    assert_eq!(
        api("/dashboard/api/workers/aHR0cDovL3c=/logs"),
        Route::Api("dashboard_api", ApiCall::WorkerLogs("aHR0cDovL3c="))
    );
    assert_eq!(
        api("/bull/api/tasks/abc"),
        Route::Api("bull_api", ApiCall::Task("abc"))
    );
    assert_eq!(admin_route("POST", "/metrics", ALL), Route::NotFound);
    assert_eq!(api("/nope"), Route::NotFound);
}

#[test]
fn overlapping_prefix_and_suffix_is_not_found() {
    // `workers/` and `/logs` overlap here: slicing by their lengths panicked.
    assert_eq!(
        admin_route("GET", "/dashboard/api/workers/logs", ALL),
        Route::Api("dashboard_api", ApiCall::NotFound)
    );
    assert_eq!(
        admin_route("GET", "/dashboard/api/workers//logs", ALL),
        Route::Api("dashboard_api", ApiCall::WorkerLogs(""))
    );
}

#[test]
fn disabled_pages_stay_disabled() {
    let none = Pages {
        dashboard: false,
        bull: false,
        on_client_port: false,
    };
    for p in [
        "/dashboard",
        "/dashboard/api/workers",
        "/bull/api/tasks",
        "/static/x",
    ] {
        assert_eq!(admin_route("GET", p, none), Route::Disabled, "{p}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_path_routes_without_panicking(
        prefix in prop::sample::select(vec![
            "", "/", "/metrics", "/dashboard", "/dashboard/", "/dashboard/api/",
            "/dashboard/api/workers", "/dashboard/api/workers/", "/bull/api/", "/bull/api/tasks",
            "/bull/api/tasks/", "/static/", "/bull",
        ]),
        middle in "(/|logs|workers|tasks|é|%2F|[a-zA-Z0-9=+]){0,6}",
        suffix in prop::sample::select(vec!["", "/", "/logs", "logs", "s/logs", "/tasks"]),
        dashboard in any::<bool>(),
        bull in any::<bool>(),
    ) {
        let path = format!("{prefix}{middle}{suffix}");
        let route = admin_route("GET", &path, Pages { dashboard, bull, on_client_port: true });
        if let Route::Api(_, ApiCall::WorkerLogs(encoded)) = route {
            prop_assert_eq!(format!("/dashboard/api/workers/{encoded}/logs"), path);
        }
    }

    #[test]
    fn arbitrary_strings_route_without_panicking(path in "\\PC{0,64}", method in "[A-Z]{0,7}") {
        let _ = admin_route(&method, &path, ALL);
        let _ = route(Port::Client, &method, &path, ALL);
    }
}

#[test]
fn the_client_port_serves_pages_only_when_exposed() {
    let exposed = Pages {
        on_client_port: true,
        ..ALL
    };
    let client = |p, pages| route(Port::Client, "GET", p, pages);
    assert_eq!(route(Port::Client, "POST", "/task", ALL), Route::Task);
    assert_eq!(
        route(Port::Client, "GET", "/task", ALL),
        Route::TaskWrongMethod
    );
    assert_eq!(client("/health", ALL), Route::Health);
    assert_eq!(client("/logs", ALL), Route::Logs);
    assert_eq!(client("/metrics", ALL), Route::OnAdminPort);
    assert_eq!(client("/dashboard/api/workers", ALL), Route::OnAdminPort);
    assert_eq!(client("/nope", ALL), Route::NotFound);
    assert_eq!(client("/metrics", exposed), Route::Metrics);
    assert_eq!(
        client("/dashboard/api/workers", exposed),
        Route::Api("dashboard_api", ApiCall::Workers)
    );
    // Readiness, liveness and the index stay on the admin port.
    assert_eq!(client("/ready", exposed), Route::NotFound);
    assert_eq!(admin_route("GET", "/ready", ALL), Route::Ready);
    assert_eq!(admin_route("POST", "/task", ALL), Route::NotFound);
}

#[test]
fn the_originals_routes_match_as_express_matched_them() {
    let on_client = |m, p| route(Port::Client, m, p, ALL);
    for path in ["/task", "/task/", "/TASK", "/Task/"] {
        assert_eq!(on_client("POST", path), Route::Task, "{path}");
    }
    assert_eq!(on_client("OPTIONS", "/task"), Route::TaskOptions);
    for path in ["/health", "/HEALTH", "/health/"] {
        assert_eq!(on_client("GET", path), Route::Health, "{path}");
        assert_eq!(on_client("HEAD", path), Route::Health, "{path}");
    }
    assert_eq!(on_client("GET", "/logs/"), Route::Logs);
    // Only one trailing slash, and only the original's own paths.
    assert_eq!(on_client("POST", "/task//"), Route::NotFound);
    assert_eq!(on_client("POST", "/tasks"), Route::NotFound);
    assert_eq!(on_client("POST", "/"), Route::NotFound);
}

#[test]
fn task_ids_route_to_task_control_on_both_ports() {
    use super::task_control::TaskCall;
    for port in [Port::Client, Port::Admin] {
        assert_eq!(
            route(port, "GET", "/task/abc", ALL),
            Route::TaskById("abc", TaskCall::Get)
        );
        assert_eq!(
            route(port, "DELETE", "/TASK/abc/", ALL),
            Route::TaskById("abc", TaskCall::Delete)
        );
        assert_eq!(
            route(port, "PUT", "/task/abc", ALL),
            Route::TaskById("abc", TaskCall::WrongMethod)
        );
        assert_eq!(route(port, "GET", "/task/a/b", ALL), Route::NotFound);
    }
    // POST /task/ is still the original's POST /task.
    assert_eq!(route(Port::Client, "POST", "/task/", ALL), Route::Task);
    assert_eq!(
        admin_route("DELETE", "/bull/api/tasks/abc", ALL),
        Route::Api("bull_api", ApiCall::Cancel("abc"))
    );
    assert_eq!(
        admin_route("DELETE", "/bull/api/workers", ALL),
        Route::NotFound
    );
}
