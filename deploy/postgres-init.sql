CREATE DATABASE dagster OWNER eventpipe;
